"""Dataset shift (shift.py): scores on corrupted test copies, results.json and the report."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from ensemble_distill.cli import main
from ensemble_distill.data.corruptions import corrupt_batch
from ensemble_distill.evaluation import LOGITS, classification_metrics, predictive
from ensemble_distill.report import plots
from ensemble_distill.shift import MEAN, SHIFT_METRICS, shift_scores

pytest.importorskip("imagecorruptions")


class Members(nn.Module):
    """Two linear members on flattened 8 x 8 grey images: (batch, 2, 3) logits."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.heads = nn.ModuleList(nn.Linear(64, 3) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1) * 10
        return torch.stack([head(flat) for head in self.heads], dim=1)


def test_shift_scores_are_the_test_metrics_of_the_corrupted_copy_and_their_mean():
    x, labels = torch.rand(12, 1, 8, 8), torch.randint(0, 3, (12,))
    model = Members()
    names, severities = ["gaussian_noise", "contrast"], [1, 4]
    models, kinds = {"ensemble": model}, {"ensemble": LOGITS}
    scores = shift_scores(models, kinds, x, labels, names, severities, 3, batch_size=5)
    block = scores["ensemble"]
    assert list(block) == [*names, MEAN] and list(block[MEAN]) == ["1", "4"]
    for name in names:
        for severity in severities:
            copy = corrupt_batch(x, name, severity, run_seed=3)
            expected = classification_metrics(predictive(model(copy).detach()), labels)
            row = block[name][str(severity)]
            assert list(row) == list(SHIFT_METRICS)
            for key in SHIFT_METRICS:
                assert row[key] == pytest.approx(expected[key], abs=1e-6)
    for key in SHIFT_METRICS:
        mean = (block["gaussian_noise"]["4"][key] + block["contrast"]["4"][key]) / 2
        assert block[MEAN]["4"][key] == pytest.approx(mean)
    assert block["gaussian_noise"]["4"]["mi"] != block["contrast"]["4"]["mi"]


def fake_results() -> dict:
    row = {"acc": 0.9, "nll": 0.3, "ece": 0.02, "mi": 0.05}
    shifted = {"1": {"acc": 0.8, "nll": 0.6, "ece": 0.05, "mi": 0.1}}
    return {
        "methods": {"ensemble": dict(row), "kd": dict(row)},
        "shift": {n: {"contrast": shifted, MEAN: shifted} for n in ("ensemble", "kd")},
    }


def test_shift_figure_draws_a_line_per_model_from_the_clean_split_in_four_panels():
    assert plots.shift_figure({"methods": {}}) is None
    figure = plots.shift_figure(fake_results())
    axes = figure.axes
    assert [ax.get_title() for ax in axes] == [label for _, label in plots.SHIFT_PANELS]
    for ax, (key, _) in zip(axes, plots.SHIFT_PANELS, strict=True):
        assert len(ax.lines) == 2
        xs, ys = ax.lines[0].get_data()
        assert list(xs) == [0, 1]
        assert list(ys) == [fake_results()["methods"]["ensemble"][key],
                            fake_results()["shift"]["ensemble"][MEAN]["1"][key]]  # fmt: skip


@pytest.mark.slow
def test_a_digits_run_writes_the_shift_block_and_the_report_figure(tmp_path):
    out = tmp_path / "run"
    args = ["run", "--out", str(out), "--quiet", "members=2", "epochs=1", "methods=[kd]"]
    args += ["model_args={widths: [16]}", "eval.latency_repeats=1"]
    args += ["eval.corruptions=[gaussian_noise, contrast]", "eval.severities=[1, 3]"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    shift = results["shift"]
    assert set(shift) == {"ensemble", "member", "kd"}
    for block in shift.values():
        assert list(block) == ["gaussian_noise", "contrast", MEAN]
        assert all(list(by_severity) == ["1", "3"] for by_severity in block.values())
        assert set(block["contrast"]["3"]) == set(SHIFT_METRICS)
    assert shift["ensemble"]["gaussian_noise"]["3"] != shift["ensemble"]["contrast"]["3"]
    assert (out / "report" / "shift.png").stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "Dataset shift: mean over corruptions per severity" in report
    assert "| ensemble: accuracy ↑ |" in report


@pytest.mark.slow  # long end to end: `make test-all` only
def test_a_run_without_corruptions_writes_no_shift_block(tmp_path):
    out = tmp_path / "run"
    args = ["run", "--out", str(out), "--quiet", "members=2", "epochs=1", "methods=[kd]"]
    assert main([*args, "model_args={widths: [8]}", "eval.latency_repeats=1"]) == 0
    assert "shift" not in json.loads((out / "results.json").read_text())
    assert not (out / "report" / "shift.png").exists()


def test_a_regression_dataset_is_refused_before_training(tmp_path):
    args = ["run", "--out", str(tmp_path / "r"), "--quiet", "dataset=toy-gap"]
    assert main([*args, "eval.corruptions=[contrast]"]) == 2
    assert not (tmp_path / "r" / "teacher").exists()
