"""Every figure is drawn from a fake run's saved files, with the expected panels."""

import dataclasses

import numpy as np
import pytest
from matplotlib.figure import Figure

from ensemble_distill.report import plots
from ensemble_distill.report.rundir import load_run

STUDENTS = ("kd", "hydra", "endd")  # as in conftest.py
MODELS = 2 + len(STUDENTS)  # ensemble, member and the students


@pytest.fixture(scope="module")
def run(run_dir):
    return load_run(run_dir)


def assert_drawn(figure: Figure, axes: int) -> None:
    """``axes`` panels, each with something drawn on it, and a non-empty PNG."""
    assert isinstance(figure, Figure)
    assert len(figure.axes) == axes
    for ax in figure.axes:
        assert ax.lines or ax.patches or ax.collections
    assert plots.figure_png(figure).startswith(b"\x89PNG")


def test_reliability_has_a_panel_per_model_with_ece_in_titles(run):
    figure = plots.reliability_figure(run)
    assert_drawn(figure, MODELS)
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[0] == f"ensemble: ECE {run.results['methods']['ensemble']['ece']:.4f}"
    assert all("ECE" in title for title in titles)


def test_mi_agreement_has_test_and_ood_panels_per_student(run):
    figure = plots.mi_agreement_figure(run)
    assert_drawn(figure, 2 * len(STUDENTS))
    titles = [ax.get_title() for ax in figure.axes]
    assert "kd, test (in-distribution)\nn/a — constant MI" in titles  # one network: MI = 0
    rho = run.results["methods"]["hydra"]["mi_spearman_ood"]
    assert f"hydra, OOD (noise)\nSpearman ρ = {rho:.3f}" in titles
    assert all(ax.get_xscale() == ax.get_yscale() == "log" for ax in figure.axes)


def test_ood_histograms_show_auroc_in_each_legend(run):
    figure = plots.ood_histogram_figure(run)
    assert_drawn(figure, MODELS)
    auroc = run.results["methods"]["endd"]["ood_auroc"]
    legends = [ax.get_legend().get_title().get_text() for ax in figure.axes]
    assert f"AUROC {auroc:.3f}" in legends


def test_risk_coverage_draws_the_ensemble_and_each_student_with_its_aurc(run):
    figure = plots.risk_coverage_figure(run)
    assert_drawn(figure, 1)
    ax = figure.axes[0]
    names = ["ensemble", *STUDENTS]
    methods = run.results["methods"]
    assert [line.get_label() for line in ax.lines] == [
        f"{name} (AURC {methods[name]['aurc']:.3g})" for name in names
    ]
    n = len(run.labels("test"))
    for line, name in zip(ax.lines, names, strict=True):
        assert line.get_color() == plots.method_style(name).color
        np.testing.assert_allclose(line.get_xdata(), np.arange(1, n + 1) / n)
        assert line.get_ydata()[-1] == pytest.approx(1 - methods[name]["acc"])
        assert line.get_ydata().mean() == pytest.approx(methods[name]["aurc"])


def test_risk_coverage_scales_to_the_risks_past_the_first_few_answers(run):
    # Labels: the ensemble's predictions, but wrong on its most confident example, so that
    # its risk is 1 at the first answer and at most 1/2 from the second on.
    probs = run.predictive("ensemble", "test").probs.mean(dim=1)
    labels = probs.argmax(dim=1)
    first = probs.max(dim=1).values.argmax()
    labels[first] = (labels[first] + 1) % probs.shape[1]
    relabelled = dataclasses.replace(
        run, tensors=run.tensors | {"labels/test": labels}, _predictive={}
    )
    ax = plots.risk_coverage_figure(relabelled).axes[0]
    assert ax.lines[0].get_ydata()[0] == 1.0
    top = max(
        line.get_ydata()[line.get_xdata() >= plots.RISK_SCALE_FROM].max() for line in ax.lines
    )
    assert 0 < top < 0.9 and ax.get_ylim() == pytest.approx((0, 1.1 * top))


def test_diversity_has_a_panel_per_perturbation(run):
    figure = plots.diversity_figure(run.diversity)
    assert_drawn(figure, 2)
    # clean train, clean test and two step sizes in each panel
    assert all(len(ax.lines) == 4 for ax in figure.axes)


def test_student_diversity_draws_each_student_and_the_teachers_dashed(run):
    diversity = run.results["test_diversity"]
    figure = plots.student_diversity_figure(diversity)
    assert_drawn(figure, 1)
    ax = figure.axes[0]
    assert ax.get_yscale() == "log"
    hydra, ensemble = ax.lines  # one line per student, then the teachers'
    assert hydra.get_color() == plots.method_style("hydra").color
    assert ensemble.get_color() == "black" and ensemble.get_linestyle() == "--"
    for line, name in ((hydra, "hydra"), (ensemble, "ensemble")):
        values = [v for v in diversity[name]["diversity"] if v is not None]
        assert line.get_ydata()[~np.isnan(line.get_ydata())].tolist() == values


def test_a_collapsed_students_zero_diversity_sits_on_the_floor(run):
    diversity = dict(run.results["test_diversity"])
    bins = diversity["hydra"]
    diversity["hydra"] = bins | {
        "diversity": [None if v is None else 0.0 for v in bins["diversity"]]
    }
    ax = plots.student_diversity_figure(diversity).axes[0]
    drawn = ax.lines[0].get_ydata()
    assert (drawn[~np.isnan(drawn)] == plots.DIVERSITY_FLOOR).all() and (~np.isnan(drawn)).any()
    assert ax.lines[-1].get_ydata()[0] == plots.DIVERSITY_FLOOR  # the dotted floor line


@pytest.mark.parametrize(
    "diversity", [None, {}, "ensemble only"], ids=["old run", "empty", "ensemble only"]
)
def test_student_diversity_is_left_out_without_a_student_with_members(run, diversity):
    if diversity == "ensemble only":
        diversity = {"ensemble": run.results["test_diversity"]["ensemble"]}
    assert plots.student_diversity_figure(diversity) is None


def test_cost_has_four_panels_with_every_model(run):
    figure = plots.cost_figure([("run_a", run.results)])
    assert_drawn(figure, 4)
    assert all(len(ax.collections) == MODELS for ax in figure.axes)
    assert all(ax.get_xscale() == "log" for ax in figure.axes)


def test_dee_shows_curve_and_a_bar_per_student(run):
    figure = plots.dee_figure(run.results)
    assert_drawn(figure, 2)
    assert len(figure.axes[1].patches) == len(STUDENTS)


def test_dee_below_one_is_drawn_on_the_extension_and_hatched(run):
    methods = run.results["methods"]
    assert methods["kd"]["dee_note"] == "extrapolated" and methods["kd"]["dee"] < 1  # seed 0
    figure = plots.dee_figure(run.results)
    left, right = figure.axes
    extension = [line for line in left.lines if line.get_label() == "a + b/k (k < 1)"]
    assert len(extension) == 1 and min(extension[0].get_xdata()) < methods["kd"]["dee"]
    hatched = {p.get_hatch() for p, n in zip(right.patches, STUDENTS, strict=True) if n == "kd"}
    assert hatched == {"//"}
    assert left.get_xlim()[0] < methods["kd"]["dee"]  # the point is inside the panel
    assert plots.figure_png(figure).startswith(b"\x89PNG")


def test_dee_figure_survives_a_dee_of_zero(run):
    results = {**run.results, "methods": {**run.results["methods"]}}
    results["methods"]["kd"] = {**results["methods"]["kd"], "dee": 0.0}
    assert_drawn(plots.dee_figure(results), 2)


def test_training_has_nll_panel_and_a_loss_panel_per_model(run):
    figure = plots.training_figure(run.histories)
    assert_drawn(figure, 1 + 1 + len(STUDENTS))  # NLL, teacher, students
    nll = figure.axes[0]
    assert len(nll.lines) == 3 + len(STUDENTS)  # one line per teacher member
    assert {ax.get_title() for ax in figure.axes[1:]} == {"teacher", *STUDENTS}


def test_run_without_ood_skips_ood_figures_and_panels(tmp_path, make_fake_run):
    run = load_run(make_fake_run(tmp_path / "run", ood=False, diversity=False))
    assert plots.ood_histogram_figure(run) is None
    assert_drawn(plots.mi_agreement_figure(run), len(STUDENTS))


def test_each_method_keeps_one_colour_and_the_ensemble_is_black():
    assert plots.method_style("ensemble").color == "#000000"
    assert plots.method_style("hydra") == plots.method_style("hydra")
    colours = {plots.method_style(n).color for n in ("member", "kd", "hydra", "endd", "be")}
    assert len(colours) == 5
    perturbed = plots.method_style("hydra+confods")
    assert perturbed.color != plots.method_style("hydra").color and perturbed.linestyle == "--"
    assert plots.method_style("unknown").color in plots.EXTRA_COLORS


def test_png_has_no_software_stamp_and_is_reproducible(run):
    first = plots.figure_png(plots.dee_figure(run.results))
    assert first == plots.figure_png(plots.dee_figure(run.results))
    assert b"matplotlib" not in first.lower()
