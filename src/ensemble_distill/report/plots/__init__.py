"""Figures of a finished run, built only from the files it saved (see :mod:`.rundir`).

Each function returns a :class:`matplotlib.figure.Figure` made without pyplot (rendered by Agg
when saved: no global figure registry, no display needed), or None when the run lacks what
the figure shows. Every model keeps one colour across all figures (:func:`method_style`), the
ensemble always black.

Classification runs get reliability diagrams, MI agreement, entropy histograms, risk–coverage
curves, teacher and student diversity and DEE; regression runs (Gaussian outputs) get
predictive bands over a 1-D input grid, interval calibration curves and test-vs-OOD variance
distributions. Cost and training curves serve both.

One module a concern, their names re-exported here:

* :mod:`.style`: the shared look (rcParams, each model's colour and marker, PNG output) and
  the panel, log-axis and epoch-axis helpers the figure modules use;
* :mod:`.classification`: reliability diagrams, MI agreement, OOD entropy histograms and
  risk–coverage curves;
* :mod:`.diversity`: the teachers' and the students' diversity per confidence bin;
* :mod:`.regression`: predictive bands, interval calibration and test-vs-OOD variance;
* :mod:`.cost`: quality against cost, and the deep-ensemble equivalent (DEE);
* :mod:`.training`: the training curves;
* :mod:`.shift`: the metrics against corruption severity (dataset shift).
"""

from ensemble_distill.report.plots.classification import (
    RISK_SCALE_FROM,
    mi_agreement_figure,
    ood_histogram_figure,
    reliability_figure,
    risk_coverage_figure,
)
from ensemble_distill.report.plots.cost import cost_figure, dee_figure
from ensemble_distill.report.plots.diversity import (
    DIVERSITY_FLOOR,
    diversity_figure,
    student_diversity_figure,
)
from ensemble_distill.report.plots.regression import (
    regression_bands_figure,
    regression_calibration_figure,
    regression_uncertainty_figure,
)
from ensemble_distill.report.plots.shift import SHIFT_PANELS, shift_curve, shift_figure
from ensemble_distill.report.plots.style import (
    EXTRA_COLORS,
    FewLogTicks,
    figure_png,
    method_style,
    time_unit,
)
from ensemble_distill.report.plots.training import MARKED_EPOCHS, training_figure

__all__ = [
    "DIVERSITY_FLOOR",
    "EXTRA_COLORS",
    "MARKED_EPOCHS",
    "RISK_SCALE_FROM",
    "SHIFT_PANELS",
    "FewLogTicks",
    "cost_figure",
    "dee_figure",
    "diversity_figure",
    "figure_png",
    "method_style",
    "mi_agreement_figure",
    "ood_histogram_figure",
    "regression_bands_figure",
    "regression_calibration_figure",
    "regression_uncertainty_figure",
    "reliability_figure",
    "risk_coverage_figure",
    "shift_curve",
    "shift_figure",
    "student_diversity_figure",
    "time_unit",
    "training_figure",
]
