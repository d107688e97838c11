"""Reports: the results table (and, later, plots and HTML) written after every run."""

from ensemble_distill.report.table import results_markdown

__all__ = ["results_markdown"]
