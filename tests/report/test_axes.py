"""Axes that read: visible one-epoch curves, whole and separate epoch ticks, and at least two
labelled ticks on every log axis however short its span (issue 19, item 6).

Tick labels are read after ``fig.canvas.draw()``, counting only ticks inside the axis's view
(matplotlib keeps ticks just outside it that are never drawn).
"""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.text import Text

from ensemble_distill.report import plots
from ensemble_distill.report.rundir import load_run


def history(epochs: int, start: float) -> list[dict[str, float | None]]:
    """A falling loss and validation NLL over ``epochs`` epochs."""
    return [
        {"epoch": e, "loss": start / e, "val_nll": start / (e + 1), "val_acc": 0.5}
        for e in range(1, epochs + 1)
    ]


def drawn(figure: Figure) -> Figure:
    figure.canvas.draw()
    return figure


def labelled_ticks(axis: Axis) -> list[Text]:
    """The non-empty major tick labels inside the axis's view limits, in axis order."""
    low, high = sorted(axis.get_view_interval())
    slack = 1e-9 * (high - low)
    return [
        label
        for loc, label in zip(axis.get_majorticklocs(), axis.get_majorticklabels(), strict=True)
        if low - slack <= loc <= high + slack and label.get_text()
    ]


def assert_apart(labels: list[Text], horizontal: bool = True) -> None:
    """No two neighbouring tick labels overlap on the page."""
    boxes = [label.get_window_extent() for label in labels]
    spans = sorted((b.x0, b.x1) if horizontal else (b.y0, b.y1) for b in boxes)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end < start, [label.get_text() for label in labels]


def as_number(text: str) -> float:
    return float(text.replace("\N{MINUS SIGN}", "-"))


# Training curves ----------------------------------------------------------------------------


def test_a_one_epoch_curve_is_drawn_as_a_visible_marker():
    figure = drawn(plots.training_figure({"teacher": history(1, 2.0), "kd": history(1, 3.0)}))
    lines = [line for ax in figure.axes for line in ax.lines]
    assert len(lines) == 4  # NLL of both, then each one's loss
    for line in lines:
        assert line.get_marker() not in (None, "", "None", " ")
        assert line.get_markersize() > 0
        low, high = line.axes.get_xlim()
        assert low < line.get_xdata()[0] < high  # the point is inside the panel


@pytest.mark.parametrize("epochs", [1, 4, 7, 150])
def test_epoch_ticks_are_whole_epochs_and_do_not_run_together(epochs):
    models = {"teacher": history(epochs, 2.0), "kd": history(epochs, 3.0)}
    models["hydra"] = history(epochs, 1.0)
    figure = drawn(plots.training_figure(models))
    for ax in figure.axes:
        labels = labelled_ticks(ax.xaxis)
        assert labels, ax.get_title()
        values = [as_number(label.get_text()) for label in labels]
        assert all(value == int(value) and 1 <= value <= epochs for value in values), values
        assert_apart(labels)


def test_a_long_curve_is_marked_every_few_epochs():
    ax = plots.training_figure({"kd": history(150, 3.0)}).axes[0]
    (line,) = ax.lines
    assert line.get_marker() == plots.method_style("kd").marker
    marked = len(range(0, 150, line.get_markevery()))
    assert 1 < marked <= plots.MARKED_EPOCHS


def test_a_short_log_nll_axis_still_labels_two_ticks():
    flat = [{"epoch": e, "loss": 1.0, "val_nll": 0.30 + 0.01 * e} for e in range(1, 6)]
    figure = drawn(plots.training_figure({"kd": flat}))
    nll = figure.axes[0]
    assert nll.get_yscale() == "log"
    labels = labelled_ticks(nll.yaxis)
    assert len(labels) >= 2
    assert_apart(labels, horizontal=False)


# Log cost axes -----------------------------------------------------------------------------


def cost_results(member: float, ensemble: float, student: float) -> dict:
    """A run whose parameters span member … ensemble and whose batch-256 latency is the
    parameter count in nanoseconds (1e-6 ms each)."""
    rows = {"member": member, "ensemble": ensemble, "kd": student}
    return {
        "dataset": "digits",
        "members": 2,
        "methods": {
            name: {"params": p, "latency_ms_b256": p * 1e-6, "acc": 0.8, "nll": 0.4}
            for name, p in rows.items()
        },
    }


SPANS = {
    "factor 2": (1_000, 2_000, 1_200),
    "one 1-2-5 tick in view": (30_000, 90_000, 40_000),
    "nearly equal": (1_000, 1_050, 1_020),
    "nine decades": (100, 1e11, 5e4),
}


@pytest.mark.parametrize("span", SPANS.values(), ids=SPANS)
def test_every_log_cost_axis_labels_at_least_two_ticks_that_do_not_overlap(span):
    figure = drawn(plots.cost_figure([("run", cost_results(*span))]))
    for ax in figure.axes:
        assert ax.get_xscale() == "log"
        if not ax.xaxis.get_label_text():  # the upper row shares the lower row's axis
            continue
        labels = labelled_ticks(ax.xaxis)
        assert len(labels) >= 2, (ax.xaxis.get_label_text(), [t.get_text() for t in labels])
        assert_apart(labels)
        low, high = ax.get_xlim()
        points = np.concatenate([c.get_offsets()[:, 0] for c in ax.collections])
        assert low <= points.min() and points.max() <= high


def test_cost_ticks_are_compact_counts_and_numbers_in_the_axis_unit():
    figure = drawn(plots.cost_figure([("run", cost_results(30_000, 90_000, 40_000))]))
    params, latency = figure.axes[2], figure.axes[3]  # lower row: labelled x axes
    counts = [label.get_text() for label in labelled_ticks(params.xaxis)]
    assert counts and all(re.fullmatch(r"\d+k", text) for text in counts), counts
    # 30 000 … 90 000 ns per example: microseconds, named once in the axis label.
    assert "(µs, log scale)" in latency.xaxis.get_label_text()
    times = [as_number(label.get_text()) for label in labelled_ticks(latency.xaxis)]
    assert times and all(30 <= t <= 90 for t in times), times


@pytest.mark.parametrize(
    ("milliseconds", "unit"), [(2500.0, "s"), (3.0, "ms"), (0.02, "µs"), (4e-5, "ns")]
)
def test_time_unit_shows_the_largest_latency_as_one_to_999(milliseconds, unit):
    name, size = plots.time_unit(milliseconds)
    assert name == unit and 1 <= milliseconds / size < 1000


def test_few_log_ticks_thins_decades_on_a_short_axis():
    locator = plots.FewLogTicks()
    ticks = locator.tick_values(1.0, 1e20)
    assert len(ticks) <= 9 and all(math.log10(t) == round(math.log10(t)) for t in ticks)


# Other integer axes ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(run_dir):
    return load_run(run_dir)


def test_dee_sizes_of_a_large_ensemble_do_not_run_together(run):
    results = {**run.results, "ensemble_size_cnll": list(np.linspace(1.0, 0.5, 50))}
    left = drawn(plots.dee_figure(results)).axes[0]
    labels = labelled_ticks(left.xaxis)
    assert len(labels) >= 2
    assert all(as_number(t.get_text()) == int(as_number(t.get_text())) for t in labels)
    assert_apart(labels)
