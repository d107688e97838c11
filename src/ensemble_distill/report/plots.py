"""Figures of a finished run, built only from the files it saved (see :mod:`.rundir`).

Each function returns a :class:`matplotlib.figure.Figure` made without pyplot (rendered by Agg
when saved: no global figure registry, no display needed), or None when the run lacks what
the figure shows. Every model keeps one colour across all figures (:func:`method_style`), the
ensemble always black.

Classification runs get reliability diagrams, MI agreement, entropy histograms, risk–coverage
curves, teacher and student diversity and DEE; regression runs (Gaussian outputs) get
predictive bands over a 1-D input grid, interval calibration curves and test-vs-OOD variance
distributions. Cost and training curves serve both.
"""

from __future__ import annotations

import functools
import io
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LinearSegmentedColormap, to_hex, to_rgb, to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import (
    EngFormatter,
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
    NullLocator,
)

from ensemble_distill import metrics
from ensemble_distill.evaluation import GaussianPredictive
from ensemble_distill.methods import METHODS
from ensemble_distill.report.rundir import History, RunDir
from ensemble_distill.report.table import NOTE_MARKS, REGRESSION, task_of

P = ParamSpec("P")
R = TypeVar("R")

STYLE = {
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.facecolor": "white",
}
DPI = 110
# Okabe–Ito colours (safe for colour-blind readers): the baselines' here, each method's its own
# (``DistillMethod.color``).
BASE_COLORS = {"ensemble": "#000000", "member": "#8c8c8c"} | {
    method.section: method.color for method in METHODS.values()
}
# Methods not listed above get one of these, chosen by a stable hash of the name.
EXTRA_COLORS = ("#56B4E9", "#882255", "#999933", "#44AA99", "#AA4499", "#332288")
# A perturbed variant (``hydra+confods``) keeps its method's hue, shaded towards white (> 0)
# or black (< 0), so that ``hydra`` and ``hydra+confods`` read as related but distinct.
PERTURBATION_SHADES = {"ods": 0.4, "gaussian": 0.6, "confods": -0.4, "diverse": -0.6}
PERTURBATION_MARKERS = {"ods": "^", "gaussian": "v", "confods": "D", "diverse": "P"}
# MI spans many orders of magnitude and is exactly 0 for single networks: log axes need a floor.
MI_FLOOR = 1e-6
# Members' pairwise KL (nats) below this is drawn on it: a collapsed student's can be 0.
DIVERSITY_FLOOR = 1e-6
# Reliability bins with fewer test examples than this are drawn pale.
FEW_EXAMPLES = 10
# Half-width of the regression bands, in standard deviations (≈ a central 95 % interval).
BAND_SIGMAS = 2.0
# The OOD inputs' range in the band plots: hatched, so it reads apart from grey bands.
OOD_SPAN = {"facecolor": "none", "edgecolor": "#c9a0a0", "hatch": "///", "lw": 0}
# Major ticks of a log axis spanning less than two decades: 1-2-5 × 10^k.
ONE_TWO_FIVE = (1.0, 2.0, 5.0)
# Below two of those in view, this many evenly spaced round numbers (at least two) instead.
SHORT_LOG_TICKS = 4
# Training curves longer than this get a marker every few epochs instead of every epoch.
MARKED_EPOCHS = 30
# The risk–coverage axis is scaled to the risks from this coverage on: the first few answered
# examples make the risk jump between 0 and 1, which would flatten an accurate model's curve.
RISK_SCALE_FROM = 0.05


@dataclass(frozen=True)
class MethodStyle:
    """How one model is drawn in every figure."""

    color: str
    marker: str
    linestyle: str


def method_style(name: str) -> MethodStyle:
    """The fixed colour, marker and line style of a model name (``METHOD[+PERTURBATION]``)."""
    base, _, perturbation = name.partition("+")
    color = BASE_COLORS.get(base) or EXTRA_COLORS[zlib.crc32(base.encode()) % len(EXTRA_COLORS)]
    marker = {"ensemble": "*", "member": "s"}.get(base, "o")
    if not perturbation:
        return MethodStyle(color, marker, "-")
    shade = PERTURBATION_SHADES.get(perturbation, 0.3)
    rgb = np.array(to_rgb(color))
    mixed = rgb + shade * (1.0 - rgb) if shade > 0 else rgb * (1.0 + shade)
    return MethodStyle(to_hex(mixed), PERTURBATION_MARKERS.get(perturbation, "X"), "--")


def styled(function: Callable[P, R]) -> Callable[P, R]:
    """Run ``function`` under :data:`STYLE` (rcParams are read when artists are created)."""

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with mpl.rc_context(STYLE):
            return function(*args, **kwargs)

    return wrapper


@styled
def figure_png(figure: Figure) -> bytes:
    """The figure as PNG bytes, identical for identical figures (no version or date stamp)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _panels(figure: Figure, count: int, ncols: int) -> list[Axes]:
    """``count`` axes on a grid of ``ncols`` columns; the unused cells removed."""
    ncols = min(ncols, count)
    grid = figure.subplots(math.ceil(count / ncols), ncols, squeeze=False)
    axes = list(grid.flat)
    for ax in axes[count:]:
        ax.remove()
    return axes[:count]


def _label_grid(axes: Sequence[Axes], ncols: int, xlabel: str, ylabel: str) -> None:
    """Axis labels on the left column and under the lowest panel of each column only."""
    for index, ax in enumerate(axes):
        ax.set_ylabel(ylabel if index % ncols == 0 else "")
        ax.set_xlabel(xlabel if index + ncols >= len(axes) else "")


def _new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _log_ticks(low: float, high: float, subs: Sequence[float]) -> list[float]:
    """Every ``s × 10^k`` (``s`` in ``subs``) in ``[low, high]``, ascending."""
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    ticks = (s * 10.0**k for k in range(first, last + 1) for s in subs)
    # Relative slack: 10.0**k * s is not exact, and a limit may sit on a tick.
    return sorted(t for t in ticks if low * (1 - 1e-9) <= t <= high * (1 + 1e-9))


class FewLogTicks(LogLocator):
    """Major ticks of a log axis that label at least two values however short its span.

    Matplotlib's own locator puts ticks at decades only, so data spanning less than a decade
    (a student and a member of similar size, an ensemble of 3) got one labelled tick or none.
    This one puts them at decades where at least three are in view (every n-th decade where
    the axis has no room for all), else at 1-2-5 × 10^k where that gives two, else at round
    numbers evenly spaced across the view (less than a factor 5: nearly even on a log axis
    too), as matplotlib's linear axes do.
    """

    def tick_values(self, vmin: float, vmax: float) -> list[float]:
        low, high = sorted((vmin, vmax))
        decades = _log_ticks(low, high, (1.0,))
        if len(decades) >= 3:
            return decades[:: math.ceil(len(decades) / self._room())]
        one_two_five = _log_ticks(low, high, ONE_TWO_FIVE)
        if len(one_two_five) >= 2:
            return one_two_five
        linear = MaxNLocator(nbins=SHORT_LOG_TICKS, min_n_ticks=2).tick_values(low, high)
        return [float(t) for t in linear if low <= t <= high]

    def _room(self) -> int:
        """How many tick labels fit along the axis (at least 3); 9 before it has one."""
        return max(3, self.axis.get_tick_space()) if self.axis is not None else 9


def _log_scale(ax: Axes, which: str, label: Callable[[float], str]) -> None:
    """Put ``ax``'s ``which`` axis ("x" or "y") on a log scale with :class:`FewLogTicks`,
    major ticks labelled by ``label`` and minor ticks unlabelled (they crowd each other)."""
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_locator(FewLogTicks())
    axis.set_major_formatter(FuncFormatter(lambda value, _: label(value)))
    axis.set_minor_formatter(NullFormatter())


def plain_number(value: float) -> str:
    """A tick value as a plain number: ``0.2``, ``5``, ``1e-05`` (not ``2×10⁻¹``)."""
    return f"{value:g}"


def count_label(value: float) -> str:
    """A count with an SI prefix: ``500``, ``20k``, ``1.5M``."""
    return EngFormatter(sep="").format_eng(value)


def time_unit(milliseconds: float) -> tuple[str, float]:
    """The unit (s, ms, µs, ns) in which ``milliseconds`` reads 1 … 999, and its size in ms:
    one unit per axis, named once in its label, keeps every tick label a short number."""
    for unit, size in (("s", 1e3), ("ms", 1.0), ("µs", 1e-3)):
        if milliseconds >= size:
            return unit, size
    return "ns", 1e-6


def _epoch_axis(ax: Axes, epochs: int) -> None:
    """Whole epochs 1 … ``epochs`` on the x axis, with half an epoch of room on each side
    (a one-epoch curve is one point in the middle), and only as many integer ticks as fit
    side by side (``nbins="auto"`` asks the axis how many its length holds)."""
    ax.set_xlim(0.5, epochs + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(nbins="auto", integer=True, min_n_ticks=1))


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
    figure = _new_figure(3.0 * min(4, len(run.names)), 0.4 + 2.9 * math.ceil(len(run.names) / 4))
    axes = _panels(figure, len(run.names), 4)
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
    _label_grid(axes, 4, "confidence max p̄ (binned)", "accuracy in bin")
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
    figure = _new_figure(3.1 * len(run.students), 0.3 + 3.0 * len(splits))
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
    figure = _new_figure(3.0 * min(4, len(run.names)), 2.8 * math.ceil(len(run.names) / 4))
    axes = _panels(figure, len(run.names), 4)
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
    _label_grid(axes, 4, "predictive entropy H[p̄] (nats)", "density (per nat, log)")
    return figure


@styled
def risk_coverage_figure(run: RunDir) -> Figure:
    """Risk–coverage curves on the test split (selective prediction, Geifman & El-Yaniv 2017):
    the error rate among the k most confident examples (confidence max p̄) against the
    fraction answered k/N, for the ensemble and each student, each one's AURC (the mean of
    its curve) in the legend. The risk axis is scaled to coverages from
    :data:`RISK_SCALE_FROM` on; the first few answered examples may leave it at the top."""
    labels = run.labels("test")
    figure = _new_figure(7.0, 3.8)
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


@styled
def diversity_figure(diversity: Mapping[str, Any]) -> Figure:
    """The teachers' mean pairwise KL per confidence bin: clean train and test inputs, and
    each perturbation of the training inputs at each step size η (one panel each)."""
    perturbed = diversity["perturbed"]
    panels = list(perturbed) or [None]  # None: a run that measured clean inputs only
    figure = _new_figure(3.4 * len(panels), 3.4)
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
    figure = _new_figure(5.0, 3.6)
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


# Regression --------------------------------------------------------------------------------


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
    figure = _new_figure(3.2 * ncols, 0.5 + 2.9 * math.ceil(len(run.names) / ncols))
    axes = _panels(figure, len(run.names), ncols)
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
    _label_grid(axes, ncols, "input x", "target y (original units)")
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
    figure = _new_figure(9.0, 3.8)
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
    figure = _new_figure(max(7.0, 2.2 * len(run.names)), 3.9)
    panels = figure.subplots(1, 2)
    scores = (("epistemic", "ood_auroc"), ("total", "ood_auroc_total"))
    for ax, (kind, key) in zip(panels, scores, strict=True):
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
        _log_scale(ax, "y", plain_number)
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
    figure = _new_figure(9.5, 6.2)
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
        _log_scale(ax, "x", count_label)
        ax.set_xlabel(f"{label} (count, log scale)")
        return
    unit, size = time_unit(largest)
    _log_scale(ax, "x", lambda value: plain_number(value / size))
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
    figure = _new_figure(10, 3.6)
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
    figure = _new_figure(max(8.0, 2.6 * len(names)), 5.8)
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
        _epoch_axis(axes[name], max(map(len, curves)))
    axes[names[0]].set_ylabel("training loss (own objective)")
    nll_ax = axes["nll"]
    values = [row.get("val_nll") for rows in histories.values() for row in rows]
    log_scale = all(value is None or value > 0 for value in values)
    if log_scale:
        _log_scale(nll_ax, "y", plain_number)
    _epoch_axis(nll_ax, max(len(rows) for h in histories.values() for rows in _epoch_curves(h)))
    nll_ax.set(
        xlabel="epoch",
        ylabel=f"validation NLL (nats{', log' if log_scale else ''}) ↓",
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
    figure = _new_figure(10, 6.4)
    axes = _panels(figure, len(SHIFT_PANELS), 2)
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
    _label_grid(axes, 2, "severity (0 = clean test split)", "mean over corruptions")
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure
