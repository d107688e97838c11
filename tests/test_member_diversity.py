"""The students' diversity per confidence bin next to the teachers' (issue 16, item 4): which
models evaluation measures, that results.json holds each one's own test bins, and that a run's
report shows them without the perturbation analysis (``eval.diversity_etas`` left empty)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from ensemble_distill import metrics
from ensemble_distill.cli import main
from ensemble_distill.evaluation import DIRICHLET, LOGITS
from ensemble_distill.run_scores import member_diversity

TINY = [
    "members=2",
    "epochs=1",
    "model_args={widths: [8]}",
    "methods=[kd,hydra]",
    "eval.latency_repeats=1",
]


def logits(*shape: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random raw outputs of one model on the test split."""
    return {"test": torch.randn(*shape, generator=torch.Generator().manual_seed(seed))}


def test_only_models_with_several_members_are_measured():
    outputs = {
        "ensemble": logits(50, 3, 4, seed=1),
        "member": logits(50, 4),
        "kd": logits(50, 4),
        "hydra": logits(50, 3, 4, seed=2),
        "one_head": logits(50, 1, 4),
        "endd": logits(50, 4),
    }
    kinds = dict.fromkeys(outputs, LOGITS) | {"endd": DIRICHLET}
    diversity = member_diversity(outputs, kinds)
    assert list(diversity) == ["ensemble", "hydra"]
    for name, bins in diversity.items():
        probs = torch.softmax(outputs[name]["test"].double(), dim=-1)
        assert bins == metrics.diversity_by_confidence(probs)


def test_nothing_is_measured_without_a_student_with_members():
    outputs = {"ensemble": logits(20, 3, 4), "member": logits(20, 4), "kd": logits(20, 4)}
    assert member_diversity(outputs, dict.fromkeys(outputs, LOGITS)) == {}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A tiny digits run of KD and Hydra with the default (empty) ``eval.diversity_etas``."""
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(["run", "--out", str(out), "--quiet", *TINY]) == 0
    return out


def test_results_hold_each_models_own_test_diversity(finished):
    results = json.loads((finished / "results.json").read_text())
    assert not (finished / "diversity.json").exists()  # no perturbation analysis was run
    diversity = results["test_diversity"]
    assert list(diversity) == ["ensemble", "hydra"]
    with safe_open(finished / "predictions.safetensors", "pt") as saved:
        for name, bins in diversity.items():
            probs = torch.softmax(saved.get_tensor(f"{name}/test").double(), dim=-1)
            assert bins == metrics.diversity_by_confidence(probs)  # JSON keeps floats exact


def test_the_report_shows_student_diversity(finished):
    assert (finished / "report" / "student_diversity.png").is_file()
    assert "### Student diversity per confidence bin" in (finished / "report.md").read_text()
    assert "<h3>Student diversity per confidence bin</h3>" in (finished / "report.html").read_text()
