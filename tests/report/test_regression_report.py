"""Reports of regression runs: Gaussian tables, bands, interval calibration, variance on OOD."""

import re
import shutil

import pytest
import torch

from ensemble_distill.errors import DataError
from ensemble_distill.report import build_report, compare_runs, plots, results_markdown
from ensemble_distill.report.rundir import load_run
from ensemble_distill.report.table import (
    AUROC_EPISTEMIC,
    COLUMNS,
    COVERAGE_90,
    REGRESSION_COLUMNS,
    REGRESSION_REPORT_TABLES,
    REPORT_TABLES,
    RHO_EPISTEMIC,
    RMSE,
    best_students,
    report_tables,
    summary_columns,
    task_of,
)

# As in conftest.py.
REGRESSION_MODELS = ("ensemble", "member", "kd", "hydra")
REGRESSION_SIZES = {"val": 30, "test": 60, "ood": 25, "grid": 50}
TARGET_MEAN, TARGET_STD = 0.5, 20.0
DATA_URI = 'src="data:image/png;base64,'
FIGURES = ["bands", "calibration", "cost", "training", "uncertainty_ood"]


@pytest.fixture(scope="module")
def run(regression_run_dir):
    return load_run(regression_run_dir)


@pytest.fixture(scope="module")
def built(regression_run_dir, tmp_path_factory):
    """A copy of the fake regression run with its report built once."""
    copy = tmp_path_factory.mktemp("built") / "reg_a"
    shutil.copytree(regression_run_dir, copy)
    return copy, *build_report(copy)


# Tables -----------------------------------------------------------------------------------


def test_task_picks_the_columns_and_old_runs_are_classification():
    assert task_of({}) == "classification" and task_of({"task": "regression"}) == "regression"
    assert summary_columns({"methods": {}}) is COLUMNS
    assert summary_columns({"task": "regression"}) is REGRESSION_COLUMNS
    assert report_tables({"task": "classification"}) is REPORT_TABLES
    assert report_tables({"task": "regression"}) is REGRESSION_REPORT_TABLES


def test_coverage_closest_to_nominal_is_best():
    methods = {
        "ensemble": {"coverage_90": 0.9},  # the reference never competes
        "kd": {"coverage_90": 0.95},
        "hydra": {"coverage_90": 0.87},
        "endd": {"coverage_90": 0.8},
    }
    assert best_students(methods, COVERAGE_90) == {"hydra"}
    assert best_students({"kd": {"rmse": 2.0}, "hydra": {"rmse": 1.5}}, RMSE) == {"hydra"}


def test_results_markdown_uses_regression_columns_and_explains_kd(regression_run_dir, run):
    text = results_markdown(run.results)
    assert text.startswith("# toy-gap: Gaussian deep ensemble of 3 members vs students")
    header = text.splitlines()[4]
    for column in REGRESSION_COLUMNS:
        assert column.header in header
    assert "ACC" not in text and "DEE" not in text and "ECE" not in text
    assert "`kd` and `member` are single Gaussians with no epistemic term" in text
    assert "epistemic AUROC is 0.5 by construction" in text
    assert "targets' original units" in text
    kd = _cells(text, "kd")
    assert kd[REGRESSION_COLUMNS.index(RMSE)] == f"{run.results['methods']['kd']['rmse']:.4g}"
    assert kd[REGRESSION_COLUMNS.index(AUROC_EPISTEMIC)] == "0.5000"
    assert kd[REGRESSION_COLUMNS.index(RHO_EPISTEMIC)] == "n/a"


def _cells(markdown: str, model: str) -> list[str]:
    """The cells of ``model``'s row in a markdown table, bold marks removed."""
    row = next(line for line in markdown.splitlines() if line.startswith(f"| {model} |"))
    return [cell.strip().strip("*") for cell in row.strip("|").split("|")][1:]


def test_results_markdown_of_classification_is_unchanged():
    results = {"dataset": "tiny", "members": 3, "ood": None, "methods": {"kd": {"acc": 0.9}}}
    text = results_markdown(results)
    assert "ACC (fraction) ↑" in text and "RMSE" not in text and "Gaussian" not in text


# Run directory ----------------------------------------------------------------------------


def test_run_reads_targets_and_gaussians_in_original_units(run):
    assert run.is_regression and run.target_scale == (TARGET_MEAN, TARGET_STD)
    labels = run.labels("test").double()
    assert torch.allclose(run.targets("test"), labels * TARGET_STD + TARGET_MEAN)
    ensemble, kd = run.gaussian("ensemble", "grid"), run.gaussian("kd", "test")
    assert ensemble.means.shape == (REGRESSION_SIZES["grid"], 3)
    assert kd.means.shape == (REGRESSION_SIZES["test"], 1) and not kd.epistemic.any()
    assert run.inputs("grid").shape == (REGRESSION_SIZES["grid"], 1)
    assert run.inputs("ood").abs().max() < 1  # the gap


def test_tabular_run_has_no_inputs(tmp_path, make_fake_regression_run):
    run = load_run(make_fake_regression_run(tmp_path / "tab", one_dimensional=False))
    assert run.inputs("grid") is None and run.inputs("test") is None
    assert plots.regression_bands_figure(run) is None
    assert plots.regression_calibration_figure(run) is not None


# Figures ----------------------------------------------------------------------------------


def test_bands_have_a_panel_per_model_with_the_gap_shaded(run):
    figure = plots.regression_bands_figure(run)
    assert len(figure.axes) == len(REGRESSION_MODELS)
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[0].startswith("ensemble: RMSE")
    assert "no epistemic band" in titles[2] and "no epistemic band" not in titles[3]  # kd, hydra
    for ax in figure.axes:
        # OOD span, total band, epistemic band (patches/collections), the mean line
        assert ax.patches and len(ax.collections) >= 3 and ax.lines
    # every panel but the ensemble's repeats the ensemble's band: 2 dashed lines more
    assert [len(ax.lines) for ax in figure.axes] == [1, 3, 3, 3]
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert "OOD gap: no training data" in legend
    assert plots.figure_png(figure).startswith(b"\x89PNG")


def test_calibration_curve_per_model_with_the_diagonal(run):
    figure = plots.regression_calibration_figure(run)
    left, right = figure.axes
    assert len(left.lines) == len(right.lines) == 1 + len(REGRESSION_MODELS)
    diagonal = left.lines[0]
    assert diagonal.get_linestyle() == "--" and list(diagonal.get_ydata()) == [0, 1]
    for line in left.lines[1:]:
        observed = line.get_ydata()
        assert ((observed >= 0) & (observed <= 1)).all() and (observed[1:] >= observed[:-1]).all()
    assert [t.get_text() for t in left.get_legend().get_texts()][1:] == list(REGRESSION_MODELS)


def test_variance_figure_compares_test_and_ood_per_model(run):
    figure = plots.regression_uncertainty_figure(run)
    epistemic, total = figure.axes
    assert epistemic.get_yscale() == total.get_yscale() == "log"
    # Two boxes (test, OOD) per model; single Gaussians get none on the epistemic side.
    assert len(total.patches) == 2 * len(REGRESSION_MODELS)
    assert len(epistemic.patches) == 2 * 2  # ensemble and hydra
    notes = [t.get_text() for t in epistemic.texts]
    assert sum("single\nGaussian" in note for note in notes) == 2  # member and kd
    auroc = run.results["methods"]["hydra"]["ood_auroc"]
    assert f"AUROC {auroc:.3f}" in notes
    assert plots.figure_png(figure).startswith(b"\x89PNG")


def test_cost_and_training_figures_use_regression_quantities(run):
    cost = plots.cost_figure([("reg_a", run.results)])
    assert all(len(ax.collections) == len(REGRESSION_MODELS) for ax in cost.axes)
    assert cost.axes[0].get_ylabel() == "test RMSE (target units) ↓"
    training = plots.training_figure(run.histories)
    nll = training.axes[0]
    assert nll.get_yscale() == "linear"  # negative Gaussian NLLs cannot go on a log axis
    assert min(min(line.get_ydata()) for line in nll.lines) < 0


def test_classification_figures_are_not_drawn_for_regression(run):
    assert plots.dee_figure(run.results) is None


# build_report and compare_runs --------------------------------------------------------------


def test_report_has_regression_figures_and_tables(built):
    run, html_path, md_path = built
    assert html_path == run / "report.html" and md_path == run / "report.md"
    assert sorted(p.name for p in (run / "report").iterdir()) == [f"{k}.png" for k in FIGURES]
    md = md_path.read_text()
    assert md.startswith("# toy-gap: Gaussian deep ensemble of 3 members vs students")
    for columns in REGRESSION_REPORT_TABLES.values():
        for column in columns:
            assert column.header in md
    for title in ("Predictive bands", "Interval calibration", "Variance on test vs OOD inputs"):
        assert f"### {title}" in md
    assert "regression (targets: mean 0.5, sd 20)" in md
    assert "no epistemic term" in md and "original units" in md
    assert "ACC (fraction)" not in md and "Reliability" not in md
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", md)
    assert len(links) == len(FIGURES) and all((run / link).is_file() for link in links)


def test_regression_html_is_self_contained_and_rebuilds_identically(built):
    run, html_path, md_path = built
    text = html_path.read_text()
    assert text.count(DATA_URI) == len(FIGURES)
    assert "http" not in text and "<link" not in text
    assert '<tr class="reference"><td>ensemble</td>' in text
    paths = [html_path, md_path, *sorted((run / "report").iterdir())]
    before = {path: path.read_bytes() for path in paths}
    build_report(run)
    assert {path: path.read_bytes() for path in paths} == before


def test_report_of_a_tabular_regression_run_skips_the_bands(tmp_path, make_fake_regression_run):
    run = make_fake_regression_run(tmp_path / "tab", one_dimensional=False)
    _, md_path = build_report(run)
    names = sorted(p.stem for p in (run / "report").iterdir())
    assert names == [k for k in FIGURES if k != "bands"]
    assert "OOD set: shift" in md_path.read_text()


def test_compare_two_regression_runs(regression_run_dir, tmp_path, make_fake_regression_run):
    other = make_fake_regression_run(tmp_path / "reg_b", seed=1, one_dimensional=False)
    html_path, md_path = compare_runs([regression_run_dir, other], tmp_path / "cmp")
    md = md_path.read_text()
    assert "| model | reg_a (toy-gap, 3 members) | reg_b (diabetes, 3 members) |" in md
    assert "## RMSE (target units) ↓" in md and "## OOD AUROC (total var) ↑" in md
    assert "## ACC (fraction) ↑" not in md and "## DEE (members) ↑" not in md
    assert "Test RMSE and NLL against" in md
    assert (tmp_path / "cmp" / "compare" / "cost.png").is_file()
    assert html_path.read_text().count(DATA_URI) == 1


def test_compare_refuses_to_mix_tasks(run_dir, regression_run_dir, tmp_path):
    with pytest.raises(DataError, match="cannot compare classification and regression"):
        compare_runs([run_dir, regression_run_dir], tmp_path / "cmp")
    assert not (tmp_path / "cmp").exists()
