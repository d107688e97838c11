"""Reports: the results table written after every run, and the evaluation report (figures,
tables, HTML and markdown) rebuilt from a run directory's saved files."""

from ensemble_distill.report.html import build_report, compare_runs
from ensemble_distill.report.table import results_markdown

__all__ = ["build_report", "compare_runs", "results_markdown"]
