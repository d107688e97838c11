"""The look every figure of the report shares.

:data:`STYLE` (the rcParams every figure function runs under, via :func:`styled`) and
:data:`DPI`; each model's fixed colour, marker and line style (:func:`method_style`, the
ensemble always black); :func:`figure_png`; and the helpers the figure modules lay out
panels and axes with: panel grids and their labels, log axes whose ticks stay labelled
however short their span (:class:`FewLogTicks`), tick labels for counts and times, and
epoch axes.
"""

from __future__ import annotations

import functools
import io
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import to_hex, to_rgb
from matplotlib.figure import Figure
from matplotlib.ticker import (
    EngFormatter,
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
)

from ensemble_distill.methods import METHODS

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
# Major ticks of a log axis spanning less than two decades: 1-2-5 × 10^k.
ONE_TWO_FIVE = (1.0, 2.0, 5.0)
# Below two of those in view, this many evenly spaced round numbers (at least two) instead.
SHORT_LOG_TICKS = 4


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


def panels(figure: Figure, count: int, ncols: int) -> list[Axes]:
    """``count`` axes on a grid of ``ncols`` columns; the unused cells removed."""
    ncols = min(ncols, count)
    grid = figure.subplots(math.ceil(count / ncols), ncols, squeeze=False)
    axes = list(grid.flat)
    for ax in axes[count:]:
        ax.remove()
    return axes[:count]


def label_grid(axes: Sequence[Axes], ncols: int, xlabel: str, ylabel: str) -> None:
    """Axis labels on the left column and under the lowest panel of each column only."""
    for index, ax in enumerate(axes):
        ax.set_ylabel(ylabel if index % ncols == 0 else "")
        ax.set_xlabel(xlabel if index + ncols >= len(axes) else "")


def new_figure(width: float, height: float) -> Figure:
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


def log_scale(ax: Axes, which: str, label: Callable[[float], str]) -> None:
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


def epoch_axis(ax: Axes, epochs: int) -> None:
    """Whole epochs 1 … ``epochs`` on the x axis, with half an epoch of room on each side
    (a one-epoch curve is one point in the middle), and only as many integer ticks as fit
    side by side (``nbins="auto"`` asks the axis how many its length holds)."""
    ax.set_xlim(0.5, epochs + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(nbins="auto", integer=True, min_n_ticks=1))
